"""Pando: lend a stream of items to volunteers and print their results in order.

Inside a user module, ``import pando`` gives the :func:`function` decorator,
and :func:`report` to tell the monitoring about the module's own work::

    import pando

    @pando.function
    def square(x):
        return x * x

This package's ``__init__``, ``module``, ``items`` and ``reporting`` use the
standard library only: browser volunteers load them into Pyodide.
"""
from pando.module import PROTOCOL_KEY, function
from pando.reporting import report

__version__ = "1.0.0"

__all__ = ["PROTOCOL_KEY", "function", "report", "__version__"]

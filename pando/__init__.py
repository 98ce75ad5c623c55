"""Pando: lend a stream of items to volunteers and print their results in order.

Inside a user module, ``import pando`` gives the :func:`function` decorator::

    import pando

    @pando.function
    def square(x):
        return x * x
"""
from pando.module import PROTOCOL_KEY, function

__version__ = "1.0.0"

__all__ = ["PROTOCOL_KEY", "function", "__version__"]

"""PANDO_DEBUG: structured logs on stderr, switched on per topic.

``PANDO_DEBUG=monitoring,lender pando ...`` enables those topics (``all``
enables every one). The ``monitoring`` topic writes one JSON status object per
line (see docs/monitoring.md); the others write ``pando:TOPIC message`` lines.
"""
from __future__ import annotations

import logging

from pando.console import Console, ConsoleHandler

#: Topic → logger name.
TOPICS = {
    "monitoring": "pando.monitoring",
    "lender": "pando.lender",
    "session": "pando.session",
    "websockets": "pando.websockets",
    "threads": "pando.threads",
    "webrtc": "pando.webrtc",
}


def configure(spec: str, console: Console) -> None:
    """Enable the topics named in ``spec`` (comma-separated); keep the others silent."""
    wanted = {topic.strip() for topic in spec.split(",") if topic.strip()}
    if wanted & {"all", "*"}:
        wanted = set(TOPICS)
    for unknown in sorted(wanted - set(TOPICS)):
        console.log(f"pando: PANDO_DEBUG: unknown topic {unknown!r} (topics: {', '.join(TOPICS)}, all)")
    for topic, name in TOPICS.items():
        logger = logging.getLogger(name)
        logger.propagate = False
        logger.handlers.clear()
        if topic in wanted:
            handler = ConsoleHandler(console)
            form = "%(message)s" if topic == "monitoring" else f"pando:{topic} %(message)s"
            handler.setFormatter(logging.Formatter(form))
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
        else:
            logger.addHandler(logging.NullHandler())
            logger.setLevel(logging.WARNING)

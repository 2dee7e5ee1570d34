"""``shipyard demo`` and its steps: the command (``command``), a server under load with a
promotion mid-traffic (``serving``), scorer processes on the embedded broker (``streaming``)."""

from shipyard.cli.demo.command import demo

__all__ = ["demo"]

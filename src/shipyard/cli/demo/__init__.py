"""``shipyard demo`` and its steps: the command (``command``), batch scoring (``scoring``), a
server under load with a promotion mid-traffic (``serving``), scorer processes on the embedded
broker (``streaming``), the loop of drift, retraining and hot swap under traffic (``loop``) and
what it prints (``timeline``), and the commands to try next (``next_steps``)."""

from shipyard.cli.demo.command import demo

__all__ = ["demo"]

"""``python -m palaestra.envs.unity.proto > unity.proto``: the communicator's messages
(messages.py builds them from communicator.yaml) written as a ``.proto`` file for other tools.

A module of its own because the package's ``__init__`` imports messages.py: run with ``-m``,
messages.py itself would be imported twice (runpy warns about it)."""

import sys

from palaestra.envs.unity.messages import proto_text

if __name__ == "__main__":
    sys.stdout.write(proto_text())

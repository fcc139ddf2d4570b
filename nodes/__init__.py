"""TokenSmith's V3 nodes, one module per concern. NODE_LIST is what the extension registers."""

from . import train

NODE_LIST: list = [*train.NODES]

"""TokenSmith's V3 nodes, one module per concern. NODE_LIST is what the extension registers."""

NODE_LIST: list = []

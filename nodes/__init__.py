"""TokenSmith's V3 nodes, one module per concern. NODE_LIST is what the extension registers."""

from . import train

NODE_LIST: list = [*train.NODES]

from . import prompt  # noqa: E402

NODE_LIST += prompt.NODES

from . import files, inspection, merge  # noqa: E402

NODE_LIST += [*files.NODES, *inspection.NODES, *merge.NODES]

from . import use  # noqa: E402

NODE_LIST += use.NODES

from . import pictures  # noqa: E402

NODE_LIST += pictures.NODES

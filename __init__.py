"""TokenSmith: train, save, inspect, merge and convert textual-inversion embeddings in ComfyUI.

Importing this package does nothing by itself; ComfyUI calls comfy_entrypoint() to register the
nodes and the /tokensmith routes.
"""

WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    from .nodes import NODE_LIST
    from .server_routes import register_routes

    class TokenSmithExtension(ComfyExtension):
        async def get_node_list(self):
            return list(NODE_LIST)

    register_routes()
    return TokenSmithExtension()

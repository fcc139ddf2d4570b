"""TokenSmith: train, save, inspect, merge and convert textual-inversion embeddings in ComfyUI."""

from comfy_api.latest import ComfyExtension

from .nodes import NODE_LIST
from .server_routes import register_routes

WEB_DIRECTORY = "./js"


class TokenSmithExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODE_LIST)


async def comfy_entrypoint() -> TokenSmithExtension:
    register_routes()
    return TokenSmithExtension()

"""HTTP routes under /tokensmith/ (registered on ComfyUI's PromptServer when one is running)."""


def register_routes() -> None:
    return None

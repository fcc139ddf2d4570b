"""A file saved by TokenSmith loads in diffusers' load_textual_inversion (a test-only dependency), on a
small StableDiffusionPipeline built from transformers/diffusers classes with tiny configs: nothing is
downloaded; the tokenizer comes from ComfyUI's own CLIP tokenizer files."""

import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.needs import importorfail

diffusers = importorfail("diffusers")
transformers = importorfail("transformers")


def text_encoder(width: int, seed: int, spare_rows: int = 0):
    """A 2-layer CLIP text model with the real vocabulary size (plus spare_rows)."""
    torch.manual_seed(seed)
    config = transformers.CLIPTextConfig(hidden_size=width, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, projection_dim=width,
                                         vocab_size=49408 + spare_rows, max_position_embeddings=77)
    return transformers.CLIPTextModel(config).eval()


@pytest.fixture(scope="module")
def pipeline(comfy_base):
    from devkit.comfy_host import host_path

    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(host_path() / "comfy" / "sd1_tokenizer"))
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
    vae = diffusers.AutoencoderKL(block_out_channels=(32,), down_block_types=("DownEncoderBlock2D",),
                                  up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=32)
    return diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder(768, 1), tokenizer=tokenizer, unet=unet,
        scheduler=diffusers.DDIMScheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def save_with_node(pack, node_classes, embeddings_dir, vectors: dict) -> Path:
    Embedding = pack("tokensmith.embedding").Embedding
    name = f"diffusers-{uuid.uuid4().hex[:8]}"
    with torch.inference_mode():
        node_classes["TokenSmithSaveEmbedding"].execute(embedding=Embedding(vectors=vectors), name=name,
                                                        overwrite=False)
    return Path(embeddings_dir) / f"{name}.safetensors"


def test_sd1_file_loads_in_diffusers_load_textual_inversion(pipeline, pack, node_classes, embeddings_dir):
    vectors = {"clip_l": torch.randn(3, 768, generator=torch.Generator().manual_seed(3)) * 0.02}
    path = save_with_node(pack, node_classes, embeddings_dir, vectors)
    vocab_before = len(pipeline.tokenizer)

    pipeline.load_textual_inversion(str(path), token="<ts-cat>", local_files_only=True)

    tokens = ["<ts-cat>", "<ts-cat>_1", "<ts-cat>_2"]  # diffusers' names for a 3-vector embedding
    ids = pipeline.tokenizer.convert_tokens_to_ids(tokens)
    assert ids == list(range(vocab_before, vocab_before + 3))
    table = pipeline.text_encoder.get_input_embeddings().weight.detach()
    assert torch.equal(table[ids], vectors["clip_l"])

    # The pipeline expands the keyword to all three vectors, in order, as ComfyUI splices them.
    prompt = pipeline.maybe_convert_prompt("a photo of <ts-cat>", pipeline.tokenizer)
    prompt_ids = pipeline.tokenizer(prompt, return_tensors="pt").input_ids[0].tolist()
    assert prompt_ids[4:7] == ids
    with torch.no_grad():
        inputs = pipeline.text_encoder.get_input_embeddings()(torch.tensor([prompt_ids]))[0]
    assert torch.equal(inputs[4:7], vectors["clip_l"])


def test_sdxl_file_loads_per_encoder_as_diffusers_documents(pipeline, pack, node_classes, embeddings_dir):
    # diffusers' SDXL recipe: load clip_l into text_encoder and clip_g into text_encoder_2 from one file.
    gen = torch.Generator().manual_seed(4)
    vectors = {"clip_l": torch.randn(2, 768, generator=gen) * 0.02, "clip_g": torch.randn(2, 1280, generator=gen) * 0.02}
    path = save_with_node(pack, node_classes, embeddings_dir, vectors)
    state = load_file(path)
    assert set(state) == {"clip_l", "clip_g"}

    tokenizer_2 = transformers.CLIPTokenizer.from_pretrained(pipeline.tokenizer.name_or_path)
    # Room for the two new tokens: diffusers' resize then keeps the table instead of drawing new rows from
    # the vocabulary's 1280x1280 covariance (~8 s on this CPU); the rows it writes are what is checked.
    encoder_2 = text_encoder(1280, 2, spare_rows=2)
    pipeline.load_textual_inversion(state["clip_l"], token="<ts-xl>", text_encoder=pipeline.text_encoder,
                                    tokenizer=pipeline.tokenizer)
    pipeline.load_textual_inversion(state["clip_g"], token="<ts-xl>", text_encoder=encoder_2, tokenizer=tokenizer_2)
    for enc, tok, key in ((pipeline.text_encoder, pipeline.tokenizer, "clip_l"), (encoder_2, tokenizer_2, "clip_g")):
        ids = tok.convert_tokens_to_ids(["<ts-xl>", "<ts-xl>_1"])
        assert torch.equal(enc.get_input_embeddings().weight.detach()[ids], vectors[key]), key

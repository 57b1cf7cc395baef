"""Training: the loss goes down, channels-last is a layout only, resuming is exact, export
(float16, int8) then load works."""

import os
import stat

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from engine.images import to_uint8
from engine.train import TrainConfig, Trainer
from engine.train.export import export_checkpoint
from engine.train.loop import rd_loss
from engine.zoo import load_weights
from engine.zoo.weights import SCALE
from tests.conftest import smooth_image


def image_folder(path, n=6):
    path.mkdir()
    for i in range(n):
        Image.fromarray(to_uint8(smooth_image(64 + 8 * i, 72, seed=i))).save(path / f"{i}.png")
    return path


def config(data, steps, **kw):
    return TrainConfig(lam=0.01, N=8, M=12, steps=steps, batch=2, crop=64, lr=2e-3,
                       warmup=2, data=str(data), **kw)


def test_training_lowers_the_loss(tmp_path):
    data = image_folder(tmp_path / "img")
    trainer = Trainer(tmp_path / "run", config(data, 80), device="cpu")
    x = torch.stack([smooth_image(64, 64, seed=s) for s in range(10, 14)])

    def held_out_loss():
        torch.manual_seed(0)
        with torch.no_grad():
            return float(rd_loss(trainer.model(x), x, 0.01)["loss"])

    before = held_out_loss()
    trainer.run(progress=False)
    assert held_out_loss() < 0.7 * before
    assert (tmp_path / "run" / "log.csv").read_text().count("\n") > 5


def test_channels_last_is_a_layout_only(tmp_path):
    """The default NHWC layout computes what NCHW does, up to float rounding (the training noise
    differs: `empty_like(...).uniform_` follows the layout)."""
    data = image_folder(tmp_path / "img")
    x = torch.stack([smooth_image(64, 64, seed=s) for s in range(10, 12)])
    models, losses = {}, {}
    for cl in (False, True):
        models[cl] = Trainer(tmp_path / str(cl), config(data, 6, channels_last=cl), "cpu").model
        layout = torch.channels_last if cl else torch.contiguous_format
        losses[cl] = rd_loss(models[cl](x.contiguous(memory_format=layout), noise=False), x, 0.01)
        losses[cl]["loss"].backward()
    assert models[False].g_a[0].weight.is_contiguous()
    assert models[True].g_a[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not models[True].g_a[0].weight.is_contiguous()
    assert losses[False]["loss"].item() == pytest.approx(losses[True]["loss"].item(), rel=1e-5)
    for (name, p), q in zip(models[False].named_parameters(), models[True].parameters(),
                            strict=True):
        if p.grad is not None:
            scale = p.grad.abs().max().item()
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-4 * scale, msg=name)


def test_resume_is_bit_identical(tmp_path):
    data = image_folder(tmp_path / "img")
    straight = Trainer(tmp_path / "a", config(data, 12), device="cpu")
    straight.run(progress=False)
    first = Trainer(tmp_path / "b", config(data, 12), device="cpu")
    first.run(max_steps=5, progress=False)
    resumed = Trainer(tmp_path / "b", device="cpu")  # a fresh process would do the same
    assert resumed.step == 5
    resumed.run(progress=False)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_export_then_load(tmp_path):
    data = image_folder(tmp_path / "img")
    trainer = Trainer(tmp_path / "run", config(data, 3), device="cpu")
    trainer.run(progress=False)
    out = tmp_path / "new" / "folder" / "w.safetensors"  # missing folders are created
    export_checkpoint(tmp_path / "run", out, quality=2)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # not owner-only
    model = load_weights(out)
    assert model.info.quality == 2 and model.info.lam == 0.01
    assert model.info.meta["steps"] == 3
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v.half().float())


def test_export_records_the_initial_weights(tmp_path):
    data = image_folder(tmp_path / "img")
    Trainer(tmp_path / "a", config(data, 3), device="cpu").run(progress=False)
    export_checkpoint(tmp_path / "a", tmp_path / "a.safetensors", quality=4)
    Trainer(tmp_path / "b", config(data, 2, init=str(tmp_path / "a.safetensors")),
            device="cpu").run(progress=False)
    export_checkpoint(tmp_path / "b", tmp_path / "b.safetensors")
    info = load_weights(tmp_path / "b.safetensors").info.meta
    assert info["steps"] == 2 and info["total_steps"] == 5
    assert info["init_info"]["quality"] == 4 and info["init_info"]["steps"] == 3


def test_int8_storage(tmp_path):
    data = image_folder(tmp_path / "img")
    trainer = Trainer(tmp_path / "run", config(data, 3), device="cpu")
    trainer.run(progress=False)
    export_checkpoint(tmp_path / "run", tmp_path / "f16.safetensors", quality=3)
    export_checkpoint(tmp_path / "run", tmp_path / "i8.safetensors", "int8", quality=3)
    model = load_weights(tmp_path / "i8.safetensors")
    assert model.info.quality == 3 and model.info.meta["steps"] == 3
    for k, v in trainer.model.state_dict().items():
        if v.dim() == 4:  # per output channel: within half a step of 1/127 of its largest value
            step = v.abs().flatten(1).amax(1).view(-1, 1, 1, 1) / 127
            assert ((model.state_dict()[k] - v).abs() <= step / 2 * 1.001).all()
        else:
            assert torch.equal(model.state_dict()[k], v.half().float())
    f16, i8 = ((tmp_path / f"{n}.safetensors").stat().st_size for n in ("f16", "i8"))
    assert i8 < 0.75 * f16
    # A weights file stored again (here back to float16) keeps the model and its history.
    export_checkpoint(tmp_path / "i8.safetensors", tmp_path / "again.safetensors")
    again = load_weights(tmp_path / "again.safetensors")
    assert again.info.quality == 3
    assert again.info.meta["train_config"] == model.info.meta["train_config"]
    assert all(torch.allclose(again.state_dict()[k], v, rtol=1e-3, atol=1e-6)
               for k, v in model.state_dict().items())
    # A damaged int8 file (scales missing) is refused with a clear error.
    with safe_open(str(tmp_path / "i8.safetensors"), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file({k: v for k, v in tensors.items() if not k.endswith(SCALE)},
              str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="scale"):
        load_weights(tmp_path / "bad.safetensors")

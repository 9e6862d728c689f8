"""A trained run as stored: ``model.pt`` (Φ, Θ, the template vertices and the run's settings) and
``template.npz``, and the checkpoints' ``state.pt``, all safetensors tensorfiles with JSON
(:mod:`catpose.tensorfile`; never unpickled). The layer below training and pose estimation: it imports
neither Ray nor the training loop, so estimating a pose loads a run without importing Ray Train."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

from catpose.config import TrainConfig
from catpose.learn.model import ContrastiveModel, build_model
from catpose.learn.template import Template
from catpose.storage import Store, atomic_write_bytes
from catpose.tensorfile import pack, require, unpack

STATE_KEYS = ("model", "optimizer", "epoch", "history")


def read_state(path: str | os.PathLike) -> dict:
    """A checkpoint's ``state.pt`` (model and optimizer states, last epoch, history): a safetensors
    tensorfile (:mod:`catpose.tensorfile`), never unpickled; anything else is a DataFormatError naming it."""
    with open(path, "rb") as fh:
        data = fh.read()
    return require(unpack(data, str(path), kind="state"), STATE_KEYS, str(path))


def write_state(path: str | os.PathLike, state: dict) -> None:
    """Writes ``state.pt`` atomically (temporary file + rename): a failed write (a full disk) leaves
    whatever was there before, never a truncated file."""
    atomic_write_bytes(path, pack(state, kind="state"))


def _jsonable(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def save_trained(
    store: Store, name: str, cfg: TrainConfig, model: ContrastiveModel, tpl: Template, epochs: int
) -> None:
    """``NAME/model.pt`` (Φ, Θ, vertices, settings, as a safetensors tensorfile: no pickle) and
    ``NAME/template.npz`` with the learned θ_j: what :func:`load_trained` reads."""
    tpl = dataclasses.replace(tpl, features=model.template.vertex_features().detach().cpu().numpy())
    store.write_bytes(f"{name}/template.npz", tpl.to_bytes())
    store.write_bytes(f"{name}/model.pt", pack({
        "encoder": model.encoder.state_dict(), "template": model.template.state_dict(),
        "vertices": np.asarray(tpl.vertices), "config": _jsonable(cfg), "epochs": epochs}, kind="model"))


def load_trained(
    run: str, endpoint_url: str | None = None, device: str = "cpu"
) -> tuple[ContrastiveModel, Template]:
    """The trained Φ/Θ and template of a finished run (a folder or s3:// URI ending in the run name)."""
    store = Store(run, endpoint_url)
    if not store.exists("model.pt"):
        raise FileNotFoundError(f"{store.url('model.pt')}: no trained model (has `catpose train` finished?)")
    where = store.url("model.pt")
    state = require(unpack(store.read_bytes("model.pt"), where, kind="model"),
                    ("encoder", "template", "vertices", "config"), where)
    c = state["config"]
    cfg = TrainConfig(
        **{k: v for k, v in c.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    )
    cfg = dataclasses.replace(cfg, weights=Path(cfg.weights) if cfg.weights else None,
                              alignment=str(cfg.alignment), ground_truth=None)
    model = build_model(cfg, torch.as_tensor(state["vertices"]), backbone_weights=False)  # the state has them
    model.encoder.load_state_dict(state["encoder"])
    model.template.load_state_dict(state["template"])
    tpl = Template.from_bytes(store.read_bytes("template.npz"), store.url("template.npz"))
    model.config = cfg  # the run's settings (crop size, data, alignment) for whoever uses the model
    return model.to(device).eval(), tpl

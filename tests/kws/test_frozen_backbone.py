"""``search.frozen_backbone``: early exits learn on a pretrained backbone that stays as it
was, so that the network's full tier is the pretrained static network exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sanas.kws.config import ConfigError, TrainConfig
from sanas.kws.model.kws_model import KWSModel
from sanas.kws.runs import initialize_from, load_run, make_model, save_run
from sanas.kws.training.gates import gate_tiers

pytestmark = pytest.mark.usefixtures("one_thread")


def config(out: Path, **fields: object) -> TrainConfig:
    """A tiny TC-ResNet8 configuration (width 4) writing to ``out``."""
    values = {"data": str(out / "data"), "out": str(out), "model": "tc-resnet8", "channels": 4}
    return TrainConfig.from_dict({**values, **fields})


@pytest.fixture
def static_run(tmp_path: Path) -> Path:
    """A run folder holding a seeded static TC-ResNet8 whose batch norms have statistics
    of their own (not the initial 0 and 1)."""
    torch.manual_seed(0)
    source = config(tmp_path / "static")
    model = make_model(source, 12)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 141, 40))
    return save_run(model, source)


def frozen_exits(static_run: Path, tmp_path: Path) -> KWSModel:
    exits = config(
        tmp_path / "exits",
        model="tc-resnet8-bsn",
        init_from=str(static_run),
        search={"frozen_backbone": True},
    )
    model = make_model(exits, 12)
    initialize_from(model, exits)
    return model


def test_only_the_exits_learn_and_the_backbone_keeps_its_statistics(
    static_run: Path, tmp_path: Path
) -> None:
    model = frozen_exits(static_run, tmp_path)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    optimizer = torch.optim.Adam(model.network_parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        out = model(torch.randn(4, 141, 40), full_network=True, cheapest_network=True)
        labels = torch.randint(0, 12, out.logits.shape[:2])
        loss = F.cross_entropy(out.logits.flatten(0, 1), labels.flatten())
        loss = loss + F.cross_entropy(out.cheapest_logits.flatten(0, 1), labels.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    after = model.net.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed, "the exits did not learn"
    assert all(k.startswith("modules_by_node.exit_") for k in changed), sorted(changed)
    assert any(k.startswith("modules_by_node.exit_0.") for k in changed)


def test_the_full_network_is_the_pretrained_static_network(
    static_run: Path, tmp_path: Path
) -> None:
    model = frozen_exits(static_run, tmp_path).eval()
    static, _ = load_run(static_run)
    static.eval()
    features = torch.randn(2, 181, 40)
    with torch.no_grad():
        full = model.run_windows(model.input_norm(features), model.all_on(features))
        expected = static(features).logits
    torch.testing.assert_close(full, expected, rtol=0, atol=1e-6)
    tiers = gate_tiers(model)
    assert not any(name.startswith("exit_") for name in tiers["full"])
    assert "exit_0" in tiers["cheap"]


def test_a_static_model_cannot_freeze_a_backbone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"search\.frozen_backbone"):
        config(tmp_path / "static", search={"frozen_backbone": True}).validate()

"""The loss is composed once (`model/loss.py::combine_loss`): the model's `.loss` and the trainer's loss agree on
a batch with gradient accumulation 1, auxiliary and registered (continual) terms included."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from dylora_moe.model.loss import combine_loss
from dylora_moe.training.config import TrainConfig
from dylora_moe.training.resume import Resumption, command_model_config
from dylora_moe.training.trainer import DyLoRATrainer
from micro import batch, micro_moe


def _trainer(model, tmp_path) -> DyLoRATrainer:
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=1,
                             report_to=[], use_cpu=True)
    fresh = Resumption(TrainConfig(), command_model_config(TrainConfig()))  # a fresh run: nothing to resume
    trainer = DyLoRATrainer(model=model, args=args, resumption=fresh, run_config={}, metadata_fn=dict)
    trainer.current_gradient_accumulation_steps = 1  # what HF's loop sets for each step
    return trainer


@pytest.mark.parametrize("training", [True, False])
def test_model_loss_equals_trainer_loss_with_grad_accum_1(tmp_path, training):
    model = micro_moe(num_experts=2, lora_dropout=0.0, router_input="context").train(training)
    model.weight_loss_term("routing_supervision_loss", 0.5)
    inputs = {**batch(), "expert_ids": torch.tensor([1, 0])}
    tokens = int((inputs["labels"][:, 1:] != -100).sum())  # the whole (accumulated, one-process) batch
    trainer = _trainer(model, tmp_path)
    out = model(**inputs)
    loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True, num_items_in_batch=tokens)
    assert out.routing_supervision_loss is not None
    torch.testing.assert_close(loss, out.loss, rtol=0, atol=0)
    expected = (out.lm_loss + model.dylora_config.balance_coefficient * out.balance_loss
                + 0.5 * out.routing_supervision_loss)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)


def test_combine_loss_scales_lm_and_divides_auxiliary_terms():
    lm, balance, other = torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0)
    loss = combine_loss(lm, [(balance, 0.1), (other, 0.0), (None, 1.0)], lm_scale=2, aux_divisor=4)
    assert loss.item() == pytest.approx(2.0 * 2 + 0.1 * 3.0 / 4)

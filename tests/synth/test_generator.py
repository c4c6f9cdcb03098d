"""AdaDFQ's generator and its game: shapes, conditioning, loss terms and their signs, seeding,
save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.pipeline import quantize
from zsq_onnx.recipe import GeneratorConfig, build_recipe
from zsq_onnx.synth.adadfq import GeneratorGame, adaptability_losses, margin_hinges, margin_loss, model_classes, normalized_entropy, train_generator
from zsq_onnx.synth.distill import input_prior
from zsq_onnx.synth.generator import ConditionalGenerator, load_generator, save_generator, upsampling_steps

UNBOUNDED = (np.zeros(3), np.ones(3), np.full(3, -np.inf), np.full(3, np.inf))


@pytest.mark.parametrize(("shape", "steps"), [((3, 32, 32), 2), ((3, 224, 224), 5), ((1, 8, 8), 0), ((3, 30, 20), 2)])
def test_generator_output_has_the_model_input_shape(shape, steps):
    assert upsampling_steps(max(shape[1:])) == steps
    prior = tuple(value[: shape[0]] for value in UNBOUNDED)
    generator = ConditionalGenerator(shape, classes=10, prior=prior)
    z, labels = generator.sample(4, torch.Generator().manual_seed(0))
    assert generator(z, labels).shape == (4, *shape)


def test_generator_is_conditioned_on_the_label_and_stays_in_the_pixel_range():
    prior = (np.array([0.5, 0.0, -0.5]), np.array([1.0, 2.0, 0.5]), np.full(3, -1.0), np.full(3, 1.5))
    generator = ConditionalGenerator((3, 16, 16), classes=5, prior=prior).eval()
    z = torch.randn(5, 100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        same_z = generator(z[:1].expand(5, -1), torch.arange(5))
        same_label = generator(z, torch.zeros(5, dtype=torch.long))
    assert all(not torch.allclose(same_z[0], same_z[i]) for i in range(1, 5)), "each label gives another image for the same noise"
    assert not torch.allclose(same_label[0], same_label[1])
    assert same_z.min() >= -1.0 and same_z.max() <= 1.5


def test_normalized_entropy_is_one_where_the_models_agree_and_zero_at_the_batch_minimum():
    teacher = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [5.0, 0.0, 0.0]])
    student = torch.tensor([[0.0, 1.0, 2.0], [1.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    entropy = normalized_entropy(teacher, student)
    assert entropy[0].item() == pytest.approx(1.0) and entropy[2].item() == pytest.approx(0.0)
    assert 0 < entropy[1].item() < 1


def test_margin_hinges_push_hard_samples_up_easy_samples_down_and_leave_the_rest():
    entropy = torch.tensor([0.05, 0.5, 0.95], requires_grad=True)
    loss = margin_hinges(entropy, low=0.1, high=0.8)
    loss.backward()
    assert loss.item() == pytest.approx((0.05 + 0.15) / 3)
    assert entropy.grad.tolist() == pytest.approx([-1 / 3, 0.0, 1 / 3]), "descent raises the too-hard sample, lowers the too-easy one"
    assert margin_hinges(torch.tensor([0.2, 0.7]), 0.1, 0.8).item() == 0.0


def test_margin_loss_descent_on_the_student_makes_an_easy_sample_harder():
    teacher = torch.tensor([[2.0, 0.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    student = (teacher + torch.tensor([[-0.3, 0.0, 0.0, 0.0], [-3.0, 1.0, 0.0, 0.0], [0.0, -0.1, 0.0, 0.0]])).requires_grad_(True)
    before = normalized_entropy(teacher, student.detach())
    assert before[0] > 0.8, "an easy sample: P and Q agree"
    margin_loss(teacher, student, 0.1, 0.8).backward()
    after = normalized_entropy(teacher, student.detach() - 0.5 * student.grad)
    assert after[0] < before[0]


def test_disagreement_term_lowers_and_agreement_term_raises_the_student_logit_of_the_label():
    teacher, student, labels = torch.randn(4, 6), torch.randn(4, 6, requires_grad=True), torch.tensor([0, 1, 2, 3])
    disagreement, agreement = adaptability_losses(teacher, student, labels)
    (gradient,) = torch.autograd.grad(disagreement, student)
    assert (gradient[torch.arange(4), labels] > 0).all(), "descent lowers Q's score of y below P's: a disagreement sample"
    (gradient,) = torch.autograd.grad(agreement, student)
    assert (gradient[torch.arange(4), labels] < 0).all(), "descent raises Q's score of y with P's: an agreement sample"


def _terms(game: GeneratorGame) -> tuple[float, float]:
    """The CE and BN-statistics terms of the game's generator on one fixed batch."""
    z, labels = game.generator.sample(64, torch.Generator().manual_seed(7))
    with torch.no_grad():
        _, cross_entropy, bn = game.teacher_terms(game.generator(z, labels), labels)
    return cross_entropy.item(), bn.item()


@pytest.fixture(scope="module")
def warm_game(digits):
    _, model, entry = digits
    game = GeneratorGame(model, entry.input_shape, GeneratorConfig(batch_size=16), seed=0)
    before = _terms(game)
    result = train_generator(game, 100, samples=20, batch_size=16, progress=False)
    return game, result, model, entry, before


def test_warm_up_lowers_each_loss_term_and_yields_calibration_batches(warm_game):
    game, result, model, entry, before = warm_game
    assert np.mean(result.loss_curve[-10:]) < 0.7 * np.mean(result.loss_curve[:10])
    after = _terms(game)
    assert after[0] < before[0] and after[1] < before[1], (before, after)
    assert [len(batch) for batch in result.batches] == [16, 4] and result.inputs.shape[1:] == entry.input_shape
    low, high = input_prior(model, 1)[2:]
    assert result.inputs.min() >= low.min() - 1e-6 and result.inputs.max() <= high.max() + 1e-6
    assert result.source == "generated" and result.game is game


def test_warm_up_makes_samples_that_the_fp32_model_recognises_as_their_label(warm_game):
    game, _, model, entry, _ = warm_game
    untrained = GeneratorGame(model, entry.input_shape, GeneratorConfig(batch_size=16), seed=0).generator
    z, labels = game.generator.sample(64, torch.Generator().manual_seed(5))
    teacher = TorchGraph(model)

    def recognised(generator) -> float:
        with torch.no_grad():
            return (teacher(generator(z, labels)).argmax(1) == labels).float().mean().item()

    assert recognised(game.generator) >= recognised(untrained) + 0.1


def test_the_game_with_a_quantized_student_trains_the_generator_only(digits):
    _, model, entry = digits
    game = GeneratorGame(model, entry.input_shape, GeneratorConfig(batch_size=8), seed=1)
    calibration = train_generator(game, 5, samples=16, batch_size=16, progress=False)
    student = TorchGraph(quantize(model, calibration.batches, build_recipe(bits="W4A4", profile="sim")), trainable=True)
    before = {name: parameter.detach().clone() for name, parameter in student.named_parameters()}
    for _ in range(3):
        batch = game.next_batch(8, student)
    assert batch.shape == (8, *entry.input_shape) and not batch.requires_grad
    assert len(game.loss_curve) == 8 and all(np.isfinite(game.loss_curve))
    assert all(parameter.grad is None and torch.equal(parameter, before[name]) for name, parameter in student.named_parameters())


def test_same_seed_same_generator_and_batches(digits):
    _, model, entry = digits

    def play(seed):
        game = GeneratorGame(model, entry.input_shape, GeneratorConfig(batch_size=8), seed=seed)
        return train_generator(game, 3, samples=8, batch_size=8, progress=False).inputs

    first, second, other = play(2), play(2), play(3)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_save_and_load_round_trip(warm_game, tmp_path):
    game, _, model, entry, _ = warm_game
    path = save_generator(game.generator, tmp_path / "gen.pt")
    loaded = load_generator(path, entry.input_shape, model_classes(model, entry.input_shape))
    z, labels = game.generator.sample(6, torch.Generator().manual_seed(9))
    game.generator.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, labels), game.generator(z, labels), rtol=0, atol=0)
    game.generator.train()
    with pytest.raises(BadInputError, match="shape"):
        load_generator(path, (3, 8, 8), 10)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(BadInputError, match="not a generator"):
        load_generator(tmp_path / "other.pt", entry.input_shape, 10)
    (tmp_path / "broken.pt").write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match="not a generator"):
        load_generator(tmp_path / "broken.pt", entry.input_shape, 10)

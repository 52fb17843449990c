"""λ̂ of a small causal transformer language model on token data, and what n counts.

``python examples/transformer_lm.py`` makes a synthetic language (2000 sequences of 16 tokens
from a sparse random bigram chain over 16 tokens), trains a one-layer transformer on
next-token prediction (about 10 s), and estimates λ̂ under the two conventions for n and the
pitfall between them (about a minute on one CPU core); docs/language_models.md explains the
table. ``--quick`` trains less and runs 2 short chains (the test suite's version).
"""

import argparse
import math
import warnings

import numpy as np
import torch

import llc
from llc.backends.torch import from_module

VOCAB, LENGTH, SEQUENCES, WIDTH = 16, 16, 2000, 32


def make_language(seed: int = 0) -> torch.Tensor:
    """Sequences of a bigram chain whose rows put most of their mass on a few successors."""
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.full(VOCAB, 0.1), size=VOCAB)
    tokens = np.empty((SEQUENCES, LENGTH), dtype=np.int64)
    tokens[:, 0] = rng.integers(0, VOCAB, SEQUENCES)
    for position in range(1, LENGTH):
        cumulative = transition[tokens[:, position - 1]].cumsum(axis=1)
        tokens[:, position] = (rng.random((SEQUENCES, 1)) < cumulative).argmax(axis=1)
    return torch.tensor(tokens)


class TinyLM(torch.nn.Module):
    """Token and position embeddings, one pre-norm transformer block, an unembedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, WIDTH)
        self.position = torch.nn.Parameter(0.1 * torch.randn(LENGTH - 1, WIDTH))
        self.block = torch.nn.TransformerEncoderLayer(WIDTH, nhead=2, dim_feedforward=64,
                                                      dropout=0.0, batch_first=True,
                                                      norm_first=True)
        self.unembed = torch.nn.Linear(WIDTH, VOCAB)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(
            LENGTH - 1))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(inputs) + self.position
        return self.unembed(self.block(hidden, src_mask=self.mask, is_causal=True))


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every token of the batch."""
    return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over sequences of each sequence's negative log-likelihood (summed over tokens)."""
    return token_loss(logits, targets) * targets.shape[1]


def train(tokens: torch.Tensor, steps: int = 1500, full_batch_steps: int = 200) -> TinyLM:
    torch.manual_seed(0)
    model = TinyLM()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        rows = torch.randint(SEQUENCES, (256,), generator=generator)
        optimizer.zero_grad()
        token_loss(model(inputs[rows]), targets[rows]).backward()
        optimizer.step()
    for _ in range(full_batch_steps):  # full-batch steps: settle close to a critical point
        optimizer.zero_grad()
        token_loss(model(inputs), targets).backward()
        optimizer.step()
    return model.eval()


def main(quick: bool = False) -> dict[str, llc.LLCResult]:
    tokens = make_language()
    data = (tokens[:, :-1], tokens[:, 1:])  # inputs and next-token targets, one row a sequence
    model = train(tokens, *((400, 50) if quick else ()))
    tokens_total = data[1].numel()
    per_token, params = from_module(model, token_loss)
    per_sequence, _ = from_module(model, sequence_loss)
    print(f"per-token loss {per_token(params, data):.4f} nats, "
          f"d = {sum(p.numel() for p in params.values())} parameters, "
          f"{SEQUENCES} sequences × {LENGTH - 1} predicted tokens = {tokens_total} tokens")
    settings = dict(step_size=1e-4, localization=100.0, batch_size=64, seed=0,
                    num_chains=2 if quick else 4, num_draws=100 if quick else 1000,
                    num_burnin=100 if quick else 500)
    runs = {
        "sequences: sequence NLL, n = sequences": (per_sequence, {}),
        "tokens: token NLL, nbeta = N_tok / log N_tok": (
            per_token, {"nbeta": tokens_total / math.log(tokens_total)}),
        "pitfall: token NLL, n = sequences (default nbeta)": (per_token, {}),
    }
    print("convention                                          nβ·(loss scale)      λ̂  ± MCSE"
          "  MALA acc.  findings")
    results = {}
    for name, (loss_fn, extra) in runs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", llc.LLCHealthWarning)  # listed below
            result = llc.estimate(loss_fn, params, data, **settings, **extra)
        scale = result.nbeta * (LENGTH - 1 if loss_fn is per_sequence else 1)
        codes = ",".join(finding.code for finding in result.findings) or "-"
        print(f"{name:<50}  {scale:>14.0f}  {result.llc_mean:>8.2f}  {result.llc_mcse:>6.2f}"
              f"  {result.mala_acceptance:>9.3f}  {codes}")
        results[name] = result
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter chains")
    main(parser.parse_args().quick)

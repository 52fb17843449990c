"""Per-head refined λ̂ of a small attention-only transformer over training.

``python examples/attention_heads.py`` makes a synthetic language of two kinds of sequences
(16 tokens over a vocabulary of 16): half follow a sparse random bigram chain, half are 8
random tokens repeated once (the second half is predictable only by copying from 7 positions
back). It trains a one-layer, four-head, attention-only transformer on next-token prediction
(about 25 s), keeps 5 checkpoints, measures how much each head attends to the token to copy,
and estimates at each checkpoint the **weight-refined λ̂ of every head** (``restrict=`` the
head's slices, ``llc.backends.torch.attention_heads``); at the last checkpoint also each
head's **susceptibilities** to 20 probe sequences of each kind (``probe=``,
``llc.susceptibilities``) and its **data-refined** λ̂ on each kind of sequence alone (the
same nβ). It prints the tables and writes ``attention_heads.png`` (``--out``). About 7.5
minutes on one CPU core; ``--quick`` is the test suite's short version. docs/attention_heads.md
shows the output.
"""

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import llc
from llc.backends.torch import attention_heads, from_module

VOCAB, LENGTH, WIDTH, HEADS, HALF = 16, 16, 32, 4, 8


def make_language(sequences: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, is_copy)``: bigram sequences and repeated-half sequences, interleaved."""
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.full(VOCAB, 0.1), size=VOCAB)
    tokens = np.empty((sequences, LENGTH), dtype=np.int64)
    tokens[:, 0] = rng.integers(0, VOCAB, sequences)
    for position in range(1, LENGTH):
        cumulative = transition[tokens[:, position - 1]].cumsum(axis=1)
        tokens[:, position] = (rng.random((sequences, 1)) < cumulative).argmax(axis=1)
    is_copy = np.arange(sequences) % 2 == 1
    first = rng.integers(0, VOCAB, (int(is_copy.sum()), HALF))
    tokens[is_copy] = np.concatenate([first, first], axis=1)
    return torch.tensor(tokens), torch.tensor(is_copy)


class AttentionOnly(torch.nn.Module):
    """Token and position embeddings, one causal multi-head attention with a residual
    connection, an unembedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, WIDTH)
        self.position = torch.nn.Parameter(0.3 * torch.randn(LENGTH - 1, WIDTH))
        self.attn = torch.nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
        self.unembed = torch.nn.Linear(WIDTH, VOCAB)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(
            LENGTH - 1))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(inputs) + self.position
        mixed, _ = self.attn(hidden, hidden, hidden, attn_mask=self.mask, need_weights=False)
        return self.unembed(hidden + mixed)


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every token of the batch."""
    return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def sequence_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean next-token cross-entropy: one loss per probe sequence."""
    tokens = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1),
                                               reduction="none")
    return tokens.reshape(targets.shape).mean(dim=-1)


def train(model: torch.nn.Module, tokens: torch.Tensor, steps: int, keep: list[int],
          seed: int = 0) -> dict[int, dict[str, torch.Tensor]]:
    """Adam on minibatches of 128 sequences; the parameters at the steps in ``keep``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    saved = {}
    for step in range(1, steps + 1):
        rows = torch.randint(0, len(tokens), (128,), generator=generator)
        loss = token_loss(model(tokens[rows, :-1]), tokens[rows, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in keep:
            saved[step] = {name: p.detach().clone() for name, p in model.named_parameters()}
    return saved


def copy_attention(model: AttentionOnly, tokens: torch.Tensor, is_copy: torch.Tensor
                   ) -> list[float]:
    """Per head, the mean attention weight from each position of the repeated half of the
    copy sequences to the token it must copy (7 positions back): what a copying head does."""
    inputs = tokens[is_copy, :-1]
    with torch.no_grad():
        hidden = model.embed(inputs) + model.position
        _, weights = model.attn(hidden, hidden, hidden, attn_mask=model.mask,
                                need_weights=True, average_attn_weights=False)
    offset = HALF - 1
    return [float(np.mean([weights[:, head, query, query - offset].mean().item()
                           for query in range(offset, LENGTH - 1)])) for head in range(HEADS)]


def main(argv: list[str] | None = None) -> dict:
    """Run the example; return the per-head λ̂ per checkpoint (``"trajectory"``), the
    data-refined λ̂ per head (``"by_data"``: copy, bigram), the heads and the figure's path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short training and chains")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder of the figure")
    parser.add_argument("--seed", type=int, default=0,
                        help="the language, the initialization, the training and the chains")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    sequences = 400 if args.quick else 2000
    tokens, is_copy = make_language(sequences, args.seed)
    steps = 200 if args.quick else 3000
    keep = [steps // 2, steps] if args.quick else [steps // 16, steps // 8, steps // 4,
                                                    steps // 2, steps]
    model = AttentionOnly()
    started = time.perf_counter()
    checkpoints = train(model, tokens, steps, keep, args.seed)
    print(f"trained {steps} steps in {time.perf_counter() - started:.0f} s; "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    attention = copy_attention(model, tokens, is_copy)
    print("attention to the copied token: " + ", ".join(
        f"head{head} {weight:.2f}" for head, weight in enumerate(attention)))
    heads = attention_heads(model)
    loss_fn, _ = from_module(model, token_loss)
    data = (tokens[:, :-1], tokens[:, 1:])
    nbeta = sequences / math.log(sequences)  # one n for every estimate: comparable
    settings = dict(step_size=1e-4, localization=100.0, nbeta=nbeta, batch_size=64, seed=args.seed,
                    num_chains=2 if args.quick else 4, num_draws=30 if args.quick else 400,
                    num_burnin=20 if args.quick else 300, progress=False)

    pointwise_fn, _ = from_module(model, sequence_losses)
    probes = 10 if args.quick else 20
    probe_rows = torch.cat([torch.nonzero(is_copy)[:probes, 0],
                            torch.nonzero(~is_copy)[:probes, 0]])
    probe = (pointwise_fn, (tokens[probe_rows, :-1], tokens[probe_rows, 1:]))

    def refined(params, data, head, **extra):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", llc.LLCHealthWarning)
            return llc.estimate(loss_fn, params, data, restrict=heads[head], **settings,
                                **extra)

    table: dict[str, list[float]] = {head: [] for head in heads}
    errors: dict[str, list[float]] = {}
    susceptibility: dict[str, tuple[float, float]] = {}
    for step, params in checkpoints.items():
        with torch.no_grad():
            loss = float(loss_fn(params, data))
        row = [f"{step:>6}", f"{loss:7.3f}"]
        for head in heads:
            last = step == keep[-1]
            result = refined(params, data, head, **({"probe": probe} if last else {}))
            if last:  # χ_i = −Cov(φ, ℓ_i): φ this head's loss increase, ℓ_i a probe sequence's
                chi = llc.susceptibilities(result)
                susceptibility[head] = (float(chi[:probes].mean()), float(chi[probes:].mean()))
            table[head].append(result.llc_mean)
            errors.setdefault(head, []).append(result.llc_mcse)
            row.append(f"{result.llc_mean:6.2f} ± {result.llc_mcse:4.2f}")
        print("  ".join(row) if step != keep[0] else
              "  step     loss  " + "  ".join(f"{h[-5:]:>13}" for h in heads) + "\n"
              + "  ".join(row))
    final = checkpoints[keep[-1]]
    copy_data = (tokens[is_copy, :-1], tokens[is_copy, 1:])
    bigram_data = (tokens[~is_copy, :-1], tokens[~is_copy, 1:])
    refined_by_data = {head: (refined(final, copy_data, head), refined(final, bigram_data, head))
                       for head in heads}
    by_data = {head: (copy.llc_mean, bigram.llc_mean)
               for head, (copy, bigram) in refined_by_data.items()}
    print("\ndata-refined λ̂ at the last checkpoint (same nβ):")
    print("   head           copy         bigram")
    for head, (copy, bigram) in refined_by_data.items():
        print(f"  {head[-5:]:>5}  {copy.llc_mean:6.2f} ± {copy.llc_mcse:4.2f}  "
              f"{bigram.llc_mean:6.2f} ± {bigram.llc_mcse:4.2f}")
    print(f"\nsusceptibility χ at the last checkpoint, mean over {probes} probe sequences of "
          "each kind (× 10³):")
    print("   head    copy  bigram")
    for head, (copy, bigram) in susceptibility.items():
        print(f"  {head[-5:]:>5}  {1e3 * copy:6.2f}  {1e3 * bigram:6.2f}")
    print(f"total {time.perf_counter() - started:.0f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for head, values in table.items():
        left.errorbar(keep, values, yerr=errors[head], marker="o", capsize=3,
                      label=head.split(".")[-1])
    left.set_xscale("log")
    left.set_xlabel("training step")
    left.set_ylabel("weight-refined λ̂ of the head")
    left.legend()
    left.set_title("per-head λ̂ over training (γ = 100)")
    positions = np.arange(len(by_data))
    right.bar(positions - 0.2, [v[0] for v in by_data.values()], 0.4, label="copy sequences",
              yerr=[c.llc_mcse for c, _ in refined_by_data.values()], capsize=3)
    right.bar(positions + 0.2, [v[1] for v in by_data.values()], 0.4, label="bigram sequences",
              yerr=[b.llc_mcse for _, b in refined_by_data.values()], capsize=3)
    right.set_xticks(positions, [head.split(".")[-1] for head in by_data])
    right.set_ylabel("data-refined λ̂ of the head")
    right.legend()
    right.set_title("at the last checkpoint, per kind of sequence")
    args.out.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out / "attention_heads.png", dpi=110)
    plt.close(figure)
    return {"trajectory": table, "by_data": by_data, "heads": heads, "steps": keep,
            "copy_attention": attention, "susceptibility": susceptibility,
            "figure": args.out / "attention_heads.png"}


if __name__ == "__main__":
    main()

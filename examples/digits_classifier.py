"""λ̂ of a trained cross-entropy classifier: a 64-4-10 tanh network on scikit-learn's digits.

``python examples/digits_classifier.py`` trains the network (full-batch Adam, 3000 steps,
about 5 s) and estimates λ̂ at two localizations γ and four step sizes ε each (about 20 s
on one CPU core); docs/classifiers.md explains the table.
"""

import warnings

import torch
from sklearn.datasets import load_digits

import llc
from llc.backends.torch import from_module


def train() -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)   # 1797 images, 8 × 8 pixels
    y = torch.tensor(digits.target)
    model = torch.nn.Sequential(torch.nn.Linear(64, 4), torch.nn.Tanh(), torch.nn.Linear(4, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3000):                                        # full batch
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval(), (x, y)


def main() -> list[llc.LLCResult]:
    model, data = train()
    loss_fn, params = from_module(model, torch.nn.functional.cross_entropy)  # mean NLL
    with torch.no_grad():
        accuracy = (model(data[0]).argmax(1) == data[1]).float().mean()
    print(f"training loss {loss_fn(params, data):.4f}, accuracy {accuracy:.3f}, "
          f"d = {sum(p.numel() for p in params.values())} parameters")
    print("   γ        ε        λ̂  ± MCSE   R-hat  MALA acc.  findings")
    results = []
    for localization in (1.0, 100.0):
        for step_size in (3e-5, 1e-4, 3e-4, 1e-3):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", llc.LLCHealthWarning)  # listed below
                result = llc.estimate(loss_fn, params, data, step_size=step_size,
                                      localization=localization, batch_size=64,
                                      num_draws=1000, num_burnin=500, seed=0)
            codes = ",".join(finding.code for finding in result.findings) or "-"
            print(f"{localization:>4g}  {step_size:>7.0e}  {result.llc_mean:>7.2f}  "
                  f"{result.llc_mcse:>6.2f}  {result.rhat:>6.3f}  {result.mala_acceptance:>8.3f}"
                  f"  {codes}")
            results.append(result)
    return results


if __name__ == "__main__":
    main()

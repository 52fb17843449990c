"""The README's PyTorch example: train a small regression model, estimate its λ̂."""

import torch, llc
from llc.backends.torch import from_module

torch.manual_seed(0)                                   # a small trained regression model
x = torch.randn(4096, 5)
y = torch.tanh(x @ torch.randn(5, 1)) + 0.5 * torch.randn(4096, 1)
model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for _ in range(3000):                                  # full-batch training
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()

model.eval()                                           # llc never changes the training flag
loss_fn, params = from_module(model, torch.nn.functional.mse_loss)   # w* = a copy
result = llc.estimate(loss_fn, params, (x, y), step_size=1e-4, batch_size=256,
                      localization=30.0,               # hold the chains near w*: see below
                      num_chains=4, num_draws=2000, num_burnin=500, baseline="minibatch")
print(result)

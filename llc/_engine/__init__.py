"""The engine that advances chains (private): what a run is made of (:mod:`.plan`), the
compiled programs reused across calls (:mod:`.programs`), the vectorized block of chains
(:mod:`.vectorized`), the one runner of both chain methods (:mod:`.runner`) and its warm-up
tuner for ``step_size="auto"`` (:mod:`.adapt`). It imports only the layers below it
(backend protocol, data, posterior, samplers); results, diagnostics and the public API
build on it."""

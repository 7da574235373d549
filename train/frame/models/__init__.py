"""Frame models of Roy et al. 2020 (Table I): the van Sloun & Demi CNN, Reg-STN, baselines."""

from train.frame.models.registry import DEFAULT_MODEL, MODELS, ModelSpec, build_model, get_spec

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelSpec", "build_model", "get_spec"]

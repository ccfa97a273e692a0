"""Curricula (``--curriculum``) and environment-parameter samplers (``--sampler``): loading and
checking their files (curricula.py, samplers.py) and the run's environment parameters, which
combine both and decide when every environment resets with new values (parameters.py).
docs/curricula.md describes the files and the exact semantics."""

from palaestra.curriculum.curricula import Curriculum, LessonState, load_curricula
from palaestra.curriculum.parameters import EnvironmentParameters
from palaestra.curriculum.samplers import SamplerConfig, load_sampler

__all__ = ["Curriculum", "EnvironmentParameters", "LessonState", "SamplerConfig", "load_curricula", "load_sampler"]

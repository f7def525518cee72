"""Search strategies over an environment's declared knobs: the baselines the specialists must
beat (random search, Optuna's TPE)."""

from .search import STRATEGIES, OptunaSearch, RandomSearch, strategy_roster
from .space import Knob, load_search_space

__all__ = ["STRATEGIES", "Knob", "OptunaSearch", "RandomSearch", "load_search_space",
           "strategy_roster"]

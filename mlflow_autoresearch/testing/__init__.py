"""What environment authors and store implementers test with: the scripted agent, the trial
contract check, and the `TrialStore` conformance suite."""

from .contract import check_trial_contract
from .scripted import ScriptedAgent, replace_in

__all__ = ["ScriptedAgent", "check_trial_contract", "replace_in"]

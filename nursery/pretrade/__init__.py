"""Pre-trade checks: the kill switches and execution safeguards every order passes before it is
routed, and the Risk Analysis Service interface."""

from nursery.pretrade.admin import KillSwitchAdmin, SetKillSwitchRequest
from nursery.pretrade.checks import SAFEGUARDS, Refusal
from nursery.pretrade.config import RiskConfig, SafeguardsConfig
from nursery.pretrade.gate import PreTradeGate
from nursery.pretrade.killswitch import KillSwitch, KillSwitchBoard, Scope

__all__ = [
    "SAFEGUARDS",
    "KillSwitch",
    "KillSwitchAdmin",
    "KillSwitchBoard",
    "PreTradeGate",
    "Refusal",
    "RiskConfig",
    "SafeguardsConfig",
    "Scope",
    "SetKillSwitchRequest",
]

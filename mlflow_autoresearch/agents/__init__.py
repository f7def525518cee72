"""Agents: the `Agent` protocol (ask and tell), the offline specialists, and LLM specialists."""

from .base import Agent, AgentContext
from .offline import OfflineAgent, offline_roster
from .roster import default_roster

__all__ = ["Agent", "AgentContext", "OfflineAgent", "default_roster", "offline_roster"]

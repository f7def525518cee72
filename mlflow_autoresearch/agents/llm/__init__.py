"""LLM specialists on any OpenAI-compatible endpoint: the client, answer parsing, prompts, agent."""

from .agent import LLMAgent, llm_roster
from .client import ClientSettings, EndpointError, LLMClient

__all__ = ["ClientSettings", "EndpointError", "LLMAgent", "LLMClient", "llm_roster"]

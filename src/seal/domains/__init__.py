"""Domains: what SEAL adapts to. The engine only talks to them through the Domain protocol."""

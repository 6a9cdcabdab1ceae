"""Contracts shared by every multinet service: topics, message models, policy documents."""

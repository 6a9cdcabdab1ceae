"""PREM: Policy Reception and Enforcement Module, one worker per node (HA and MR)."""

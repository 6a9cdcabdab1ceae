"""Namespace labs, demo drivers and test helpers: what the tests, the benchmarks and the
demos build around the services, kept out of the product package (`services`).

A lab builds a few network namespaces with veth links, starts real service processes in them
and offers readers (counters, bus listeners) that do not go through the code under test.
"""

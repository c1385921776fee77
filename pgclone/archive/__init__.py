"""A dump's bytes: compression, age encryption, signed manifests, and the
container with its writer, reader and parallel copy.
"""

"""The V2 (Open Inference) protocol's wire formats, one home shared by vatic's doors and clients.

* :mod:`.types` - the datatypes, tensors, requests, responses and metadata, and their JSON codec;
* :mod:`.schema` - the same bodies as pydantic models, for a door that validates and documents them;
* :mod:`.binary` - the binary tensor data extension (tritonclient's default);
* :mod:`.grpc` - the ``inference.GRPCInferenceService`` messages and their conversion to and from JSON.
"""

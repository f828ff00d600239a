"""The V2 (Open Inference) protocol's wire formats shared by vatic's doors and clients: so far the binary
tensor data extension (:mod:`.binary`)."""

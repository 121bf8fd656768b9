"""Training machinery shared by every training flow (launch, checkpoint, resume, artifacts)."""

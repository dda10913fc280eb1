"""Voice-agent framework integrations: voxws.integrations.pipecat, voxws.integrations.livekit."""

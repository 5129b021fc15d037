"""Plans to and from other on-device training tools (tiny-training's backward_config)."""

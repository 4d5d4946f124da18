"""skpo.rollout"""

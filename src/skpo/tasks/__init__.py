"""skpo.tasks"""

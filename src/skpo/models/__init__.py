"""skpo.models"""

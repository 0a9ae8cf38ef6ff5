"""covseg.cli"""

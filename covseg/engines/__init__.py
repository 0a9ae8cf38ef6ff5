"""covseg.engines"""

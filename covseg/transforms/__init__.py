"""covseg.transforms"""

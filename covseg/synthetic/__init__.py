"""covseg.synthetic"""

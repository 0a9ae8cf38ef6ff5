"""covseg.losses"""

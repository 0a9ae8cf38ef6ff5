"""covseg.networks"""

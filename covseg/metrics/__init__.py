"""covseg.metrics"""

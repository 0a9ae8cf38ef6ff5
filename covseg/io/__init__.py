"""covseg.io"""

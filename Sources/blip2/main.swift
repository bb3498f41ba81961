print("blip2")

// Blip2Image

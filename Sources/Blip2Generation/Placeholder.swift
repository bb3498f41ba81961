// Blip2Generation
